//! The HTTP data path: one handler for outbound, inbound and gateway listeners.
//!
//! Per request: load the current config once, find the virtual host by authority (one
//! lowercase pass, one hash lookup), first matching route, weighted pick, circuit breaker,
//! load balancer, pooled connection, stream the bodies as hyper frames.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use skein_snapshot::{BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER};

use crate::access_log::{LogRecord, ResponseFlags};
use crate::authz::{self, Attrs, Decision, HttpAttrs};
use crate::body::{BodyCopy, ProxyBody, ReqBody, UpstreamBody};
use crate::cluster::{
    ActiveGuard, ClusterRequest, ClusterState, Conn, EndpointState, H1Conn, PoolError,
    UpstreamProto,
};
use crate::drain::{ConnToken, DrainSignal};
use crate::identity::PeerIdentity;
use crate::lb::PickCtx;
use crate::metrics::RequestMetrics;
use crate::retry::{Failure, RetryGuard, RetryPolicy};
use crate::route::{Action, CompiledRoute, Dest, RequestView};
use crate::state::{Compiled, Shared};

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sidecar outbound (the app's HTTP proxy).
    Outbound,
    /// Sidecar inbound (in front of the app).
    Inbound,
    /// Gateway.
    Gateway,
}

/// Per-listener context.
#[derive(Debug)]
pub struct HttpCtx {
    /// Shared proxy state.
    pub shared: Arc<Shared>,
    /// Role.
    pub role: Role,
    /// Route config name (outbound and gateway).
    pub route_config: String,
    /// Which inbound listener this is: the index into `ProxyConfig::inbound` and
    /// `Compiled::inbound` (None for outbound and gateway listeners).
    pub inbound: Option<usize>,
}

/// Per-connection facts.
#[derive(Debug)]
pub struct ConnInfo {
    /// Local address.
    pub local: SocketAddr,
    /// Peer address.
    pub remote: SocketAddr,
    /// TLS SNI, if any.
    pub sni: Option<Arc<str>>,
    /// The mTLS peer's SPIFFE identity (inbound mTLS connections only).
    pub peer: Option<Arc<PeerIdentity>>,
    /// This connection's `x-forwarded-client-cert` element (inbound mTLS only), built once.
    pub xfcc: Option<HeaderValue>,
    /// Inbound metrics labelled with this connection's peer, made on its first request.
    pub inbound_metrics: std::sync::OnceLock<Arc<RequestMetrics>>,
}

/// The metrics a request on `conn` to `cluster` counts in: inbound ones carry the peer.
fn metrics_for(cluster: &ClusterState, conn: &ConnInfo) -> Arc<RequestMetrics> {
    if !cluster.name.starts_with("inbound|") {
        return Arc::clone(&cluster.metrics);
    }
    Arc::clone(conn.inbound_metrics.get_or_init(|| {
        Arc::new(RequestMetrics::new(crate::metrics::with_peer(
            cluster.metrics.base(),
            conn.peer.as_deref(),
        )))
    }))
}

impl ConnInfo {
    /// A plaintext connection.
    pub fn plain(local: SocketAddr, remote: SocketAddr) -> Self {
        ConnInfo {
            local,
            remote,
            sni: None,
            peer: None,
            xfcc: None,
            inbound_metrics: std::sync::OnceLock::new(),
        }
    }
}

const OVERFLOW_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";
const CONNECT_FAILURE_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
const TERMINATION_BODY: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
const NO_HEALTHY_BODY: &str = "no healthy upstream";
const TIMEOUT_BODY: &str = "upstream request timeout";

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
static X_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
static X_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
static X_SERVICE_TIME: HeaderName = HeaderName::from_static("x-envoy-upstream-service-time");
/// On a 503 from a skein proxy: the request did not reach the app (connect failure).
pub static NOT_DELIVERED: HeaderName = HeaderName::from_static("x-skein-not-delivered");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// How a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Fully sent.
    Complete,
    /// The upstream body failed.
    UpstreamError,
    /// The downstream went away first.
    DownstreamGone,
}

/// Bookkeeping run once when a request ends: pool return, counters, metrics, access log.
#[derive(Debug)]
pub struct Finish {
    shared: Arc<Shared>,
    rec: Box<LogRecord>,
    started: Instant,
    received: Arc<AtomicU64>,
    metrics: Option<Arc<RequestMetrics>>,
    pool: Option<(Arc<ClusterState>, Arc<EndpointState>, H1Conn)>,
    cluster_req: Option<ClusterRequest>,
    active: Option<ActiveGuard>,
}

impl Finish {
    /// Records the end of the request.
    pub fn done(mut self, end: End, sent: u64) {
        match end {
            End::Complete => {
                if let Some((cluster, ep, conn)) = self.pool.take() {
                    cluster.checkin(&ep, conn);
                }
            }
            End::UpstreamError => self.rec.flags |= ResponseFlags::UC,
            End::DownstreamGone => self.rec.flags |= ResponseFlags::DC,
        }
        self.pool = None;
        self.cluster_req = None;
        self.active = None;
        let elapsed = self.started.elapsed();
        let mut rec = self.rec;
        rec.duration_ms = elapsed.as_millis() as u64;
        rec.bytes_received = self.received.load(Ordering::Relaxed);
        rec.bytes_sent = sent;
        if let Some(m) = &self.metrics {
            m.record(&self.shared.metrics, rec.code, rec.flags, elapsed);
        }
        if self.shared.access_log.enabled() {
            self.shared.access_log.log(rec);
        }
    }
}

/// Owns the [`Finish`] while the response is not yet produced; dropping it (the downstream
/// closed before a response) logs the request with flag DC.
struct InFlight {
    fin: Option<Box<Finish>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(mut f) = self.fin.take() {
            f.rec.code = 0;
            f.done(End::DownstreamGone, 0);
        }
    }
}

impl InFlight {
    fn fin(&mut self) -> &mut Finish {
        match self.fin.as_mut() {
            Some(f) => f,
            None => unreachable!("InFlight used after completion"),
        }
    }

    /// Sends a locally generated response and logs it.
    fn reply(
        mut self,
        status: u16,
        flags: ResponseFlags,
        details: impl Into<Cow<'static, str>>,
        body: Bytes,
        version: Version,
    ) -> Response<ProxyBody> {
        let len = body.len() as u64;
        let has_body = !body.is_empty();
        let mut resp = Response::new(ProxyBody::full(body));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        *resp.version_mut() = version;
        if has_body {
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        if let Some(mut f) = self.fin.take() {
            f.rec.code = status;
            f.rec.flags |= flags;
            f.rec.details = details.into();
            f.done(End::Complete, len);
        }
        resp
    }

    fn error(self, err: PoolError, version: Version) -> Response<ProxyBody> {
        match err {
            PoolError::Overflow => self.reply(
                503,
                ResponseFlags::UO,
                "upstream_reset_before_response_started{overflow}",
                Bytes::from_static(OVERFLOW_BODY.as_bytes()),
                version,
            ),
            other => {
                let mut s = self;
                let body = match &other {
                    PoolError::Tls { reason, .. } => Bytes::from(format!(
                        "{CONNECT_FAILURE_BODY}, transport failure reason: {reason}"
                    )),
                    _ => Bytes::from_static(CONNECT_FAILURE_BODY.as_bytes()),
                };
                s.fin().rec.transport_failure = Some(match other {
                    PoolError::ConnectTimeout { .. } => Cow::Borrowed("connect_timeout"),
                    PoolError::Handshake { .. } => Cow::Borrowed("handshake_failure"),
                    PoolError::Tls { reason, .. } => Cow::Owned(reason),
                    _ => Cow::Borrowed("connection_failure"),
                });
                let mut resp = s.reply(
                    503,
                    ResponseFlags::UF,
                    "upstream_reset_before_response_started{connection_failure}",
                    body,
                    version,
                );
                // Tells a client sidecar that nothing reached the app, so it may try
                // another host.
                resp.headers_mut().insert(
                    NOT_DELIVERED.clone(),
                    HeaderValue::from_static("connect-failure"),
                );
                resp
            }
        }
    }
}

/// A random UUID v4 for `x-request-id`.
fn request_id() -> HeaderValue {
    let r = fastrand::u128(..);
    let b = r.to_be_bytes();
    let mut s = [0u8; 36];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut j = 0;
    for (i, byte) in b.iter().enumerate() {
        let byte = match i {
            6 => (byte & 0x0f) | 0x40,
            8 => (byte & 0x3f) | 0x80,
            _ => *byte,
        };
        if matches!(i, 4 | 6 | 8 | 10) {
            s[j] = b'-';
            j += 1;
        }
        s[j] = HEX[(byte >> 4) as usize];
        s[j + 1] = HEX[(byte & 0xf) as usize];
        j += 2;
    }
    HeaderValue::from_bytes(&s).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// `x-forwarded-client-cert` on inbound requests: the mTLS peer's element is appended to what
/// a previous hop sent (Istio's APPEND_FORWARD); on plaintext connections the header is removed,
/// since anyone could have written it.
fn set_xfcc(h: &mut HeaderMap, conn: &ConnInfo) {
    match &conn.xfcc {
        None => {
            h.remove(&X_FORWARDED_CLIENT_CERT);
        }
        Some(mine) => {
            let joined = h
                .get(&X_FORWARDED_CLIENT_CERT)
                .and_then(|prev| {
                    let mut v = prev.as_bytes().to_vec();
                    v.push(b',');
                    v.extend_from_slice(mine.as_bytes());
                    HeaderValue::from_bytes(&v).ok()
                })
                .unwrap_or_else(|| mine.clone());
            h.insert(X_FORWARDED_CLIENT_CERT.clone(), joined);
        }
    }
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    if let Some(conn) = h.remove(header::CONNECTION)
        && let Ok(list) = conn.to_str()
    {
        for name in list.split(',') {
            let name = name.trim();
            if !name.is_empty() && !name.eq_ignore_ascii_case("close") {
                h.remove(name);
            }
        }
    }
    h.remove(&PROXY_CONNECTION);
    h.remove(&KEEP_ALIVE);
    h.remove(header::TRANSFER_ENCODING);
    h.remove(header::UPGRADE);
    h.remove(header::PROXY_AUTHORIZATION);
    if let Some(te) = h.get(header::TE)
        && te.as_bytes() != b"trailers"
    {
        h.remove(header::TE);
    }
}

fn protocol_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

/// Handles one request.
pub async fn handle(
    ctx: Arc<HttpCtx>,
    conn: Arc<ConnInfo>,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let snap: Arc<Compiled> = ctx.shared.current.load_full();
    let down_version = req.version();
    let resp_version = if down_version == Version::HTTP_2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    let host = req.headers().get(header::HOST);
    let authority: Option<HeaderValue> = match req.uri().authority() {
        // Absolute-form (HTTP proxy requests) and HTTP/2: the URI's authority wins; reuse the
        // Host header's bytes when it says the same, to avoid a copy.
        Some(a) => match host {
            Some(h) if h.as_bytes() == a.as_str().as_bytes() => Some(h.clone()),
            _ => HeaderValue::from_str(a.as_str()).ok(),
        },
        None => host.cloned(),
    };
    if !req.headers().contains_key(&X_REQUEST_ID) {
        req.headers_mut().insert(X_REQUEST_ID.clone(), request_id());
    }
    if ctx.role == Role::Gateway {
        let ip = HeaderValue::from_str(&conn.remote.ip().to_string()).ok();
        if let Some(ip) = ip {
            match req
                .headers()
                .get(&X_FORWARDED_FOR)
                .and_then(|v| v.to_str().ok())
            {
                Some(prev) => {
                    if let Ok(v) = HeaderValue::from_str(&format!("{prev}, {}", conn.remote.ip())) {
                        req.headers_mut().insert(X_FORWARDED_FOR.clone(), v);
                    }
                }
                None => {
                    req.headers_mut().insert(X_FORWARDED_FOR.clone(), ip);
                }
            }
        }
    }
    let received = Arc::new(AtomicU64::new(0));
    let mut rec = Box::new(LogRecord::new(conn.local, conn.remote));
    rec.method = Some(req.method().clone());
    rec.path = req.uri().path_and_query().cloned();
    rec.protocol = Some(protocol_str(down_version));
    rec.xff = req.headers().get(&X_FORWARDED_FOR).cloned();
    rec.user_agent = req.headers().get(header::USER_AGENT).cloned();
    rec.request_id = req.headers().get(&X_REQUEST_ID).cloned();
    rec.authority = authority.clone();
    rec.sni = conn.sni.clone();
    rec.peer = conn.peer.clone();
    let mut inflight = InFlight {
        fin: Some(Box::new(Finish {
            shared: Arc::clone(&ctx.shared),
            rec,
            started,
            received: Arc::clone(&received),
            metrics: None,
            pool: None,
            cluster_req: None,
            active: None,
        })),
    };

    if req.method() == http::Method::CONNECT {
        return Ok(inflight.reply(
            405,
            ResponseFlags::NONE,
            "connect_not_supported",
            Bytes::from_static(b"CONNECT is not supported; send plain HTTP through the proxy"),
            resp_version,
        ));
    }
    let auth_str = authority
        .as_ref()
        .and_then(|a| a.to_str().ok())
        .unwrap_or("");

    if ctx.role == Role::Inbound {
        let cluster = ctx.inbound.and_then(|i| snap.inbound.get(i)).cloned();
        let Some(cluster) = cluster else {
            return Ok(inflight.reply(
                503,
                ResponseFlags::NC,
                "cluster_not_found",
                Bytes::new(),
                resp_version,
            ));
        };
        set_xfcc(req.headers_mut(), &conn);
        if !snap.authz.is_empty() {
            let workload_port = ctx
                .inbound
                .and_then(|i| ctx.shared.config.inbound.get(i))
                .map_or(0, |ib| ib.app.port());
            let path = req.uri().path();
            let decision = snap.authz.evaluate(&Attrs {
                source: conn.remote.ip(),
                destination: conn.local,
                workload_port,
                peer: conn.peer.as_deref(),
                sni: conn.sni.as_deref(),
                http: Some(HttpAttrs {
                    host: auth_str,
                    method: req.method().as_str(),
                    path,
                    headers: req.headers(),
                }),
            });
            if let Decision::Deny { details, audit } = decision {
                tracing::debug!(%details, audit, remote = %conn.remote, "request denied by AuthorizationPolicy");
                let f = inflight.fin();
                f.rec.upstream_cluster = Some(Arc::clone(&cluster.name));
                f.metrics = Some(metrics_for(&cluster, &conn));
                return Ok(inflight.reply(
                    403,
                    ResponseFlags::NONE,
                    details.to_string(),
                    Bytes::from_static(authz::DENIED_BODY.as_bytes()),
                    resp_version,
                ));
            }
        }
        let auth = authority.clone();
        return Ok(forward(
            inflight,
            &conn,
            req,
            received,
            cluster,
            None,
            None,
            auth,
            resp_version,
        )
        .await);
    }

    let lower: Cow<'_, str> = if auth_str.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(auth_str.to_ascii_lowercase())
    } else {
        Cow::Borrowed(auth_str)
    };
    let vhost = snap
        .route_configs
        .get(&ctx.route_config)
        .and_then(|rc| rc.find(&lower));
    let Some(vhost) = vhost else {
        if ctx.role == Role::Gateway {
            inflight.fin().metrics = Some(Arc::clone(&snap.no_route_metrics));
            return Ok(inflight.reply(
                404,
                ResponseFlags::NR,
                "route_not_found",
                Bytes::new(),
                resp_version,
            ));
        }
        if snap.registry_only {
            return Ok(blackhole(inflight, &snap, resp_version));
        }
        let auth = lower.into_owned();
        return Ok(passthrough(inflight, &snap, &conn, req, received, &auth, resp_version).await);
    };

    let (path, query) = {
        let pq = req.uri().path_and_query();
        (
            pq.map(PathAndQuery::path).unwrap_or("/"),
            pq.and_then(PathAndQuery::query),
        )
    };
    let view = RequestView {
        path,
        query,
        method: req.method().as_str(),
        authority: auth_str,
        headers: req.headers(),
    };
    let found = vhost
        .routes
        .iter()
        .find_map(|r| r.matching_block(&view).map(|b| (r, b)));
    let Some((route, block)) = found else {
        inflight.fin().metrics = Some(Arc::clone(&snap.no_route_metrics));
        return Ok(inflight.reply(
            404,
            ResponseFlags::NR,
            "route_not_found",
            Bytes::new(),
            resp_version,
        ));
    };
    inflight.fin().rec.route_name = Some(Arc::clone(&route.name));

    match &route.action {
        Action::Direct { status, body } => {
            inflight.fin().metrics = Some(Arc::clone(&snap.no_route_metrics));
            Ok(inflight.reply(
                *status,
                ResponseFlags::NONE,
                "direct_response",
                body.clone(),
                resp_version,
            ))
        }
        Action::Redirect(rd) => {
            let scheme = rd.scheme.as_deref().unwrap_or("http");
            let host_full = rd.authority.as_deref().unwrap_or(auth_str);
            let host = match rd.port {
                Some(p) => format!("{}:{p}", crate::route::strip_port(host_full)),
                None => host_full.to_string(),
            };
            let uri = rd.uri.as_deref().unwrap_or(path);
            let loc = format!("{scheme}://{host}{uri}");
            let mut resp = inflight.reply(
                rd.code.unwrap_or(301),
                ResponseFlags::NONE,
                "direct_response",
                Bytes::new(),
                resp_version,
            );
            if let Ok(v) = HeaderValue::from_str(&loc) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            Ok(resp)
        }
        Action::Route { .. } => {
            let Some(dest) = route.action.pick() else {
                return Ok(blackhole(inflight, &snap, resp_version));
            };
            let Some(cluster) = dest.cluster.clone() else {
                if &*dest.name == PASSTHROUGH_CLUSTER {
                    let auth = lower.into_owned();
                    return Ok(passthrough(
                        inflight,
                        &snap,
                        &conn,
                        req,
                        received,
                        &auth,
                        resp_version,
                    )
                    .await);
                }
                if &*dest.name == BLACKHOLE_CLUSTER {
                    return Ok(blackhole(inflight, &snap, resp_version));
                }
                inflight.fin().rec.upstream_cluster = Some(Arc::clone(&dest.name));
                return Ok(inflight.reply(
                    503,
                    ResponseFlags::NC,
                    "cluster_not_found",
                    Bytes::new(),
                    resp_version,
                ));
            };
            // Request rewrites and header operations.
            let rewritten = rewrite_path(route, block, path, query);
            let new_authority = route.rewrite_authority.clone();
            if rewritten.is_some()
                && let Some(pq) = req.uri().path_and_query()
                && let Ok(v) = HeaderValue::from_str(pq.as_str())
            {
                req.headers_mut().insert(X_ORIGINAL_PATH.clone(), v);
            }
            if let Some(pq) = rewritten {
                let mut parts = req.uri().clone().into_parts();
                parts.path_and_query = Some(pq);
                if let Ok(u) = Uri::from_parts(parts) {
                    *req.uri_mut() = u;
                }
            }
            route.ops.request.apply(req.headers_mut());
            dest.ops.request.apply(req.headers_mut());
            let auth = new_authority.or_else(|| authority.clone());
            if let Some(fault) = &route.fault {
                let d = fault.decide();
                if let Some(delay) = d.delay {
                    tokio::time::sleep(delay).await;
                    inflight.fin().rec.flags |= ResponseFlags::DI;
                }
                if let Some(status) = d.abort {
                    let f = inflight.fin();
                    f.rec.upstream_cluster = Some(Arc::clone(&cluster.name));
                    f.metrics = Some(metrics_for(&cluster, &conn));
                    return Ok(inflight.reply(
                        status,
                        ResponseFlags::FI,
                        "fault_filter_abort",
                        Bytes::from_static(crate::fault::ABORT_BODY.as_bytes()),
                        resp_version,
                    ));
                }
            }
            Ok(forward(
                inflight,
                &conn,
                req,
                received,
                cluster,
                Some(route),
                Some(dest),
                auth,
                resp_version,
            )
            .await)
        }
    }
}

fn rewrite_path(
    route: &CompiledRoute,
    block: usize,
    path: &str,
    query: Option<&str>,
) -> Option<PathAndQuery> {
    let new_path: String = if let Some(prefix) = &route.rewrite_uri {
        let matched = route
            .matches
            .get(block)
            .and_then(|m| m.matched_prefix_len());
        match matched {
            Some(n) if path.len() >= n && path.is_char_boundary(n) => {
                format!("{prefix}{}", &path[n..])
            }
            _ => prefix.clone(),
        }
    } else if let Some(rr) = &route.rewrite_regex {
        rr.re.replace_all(path, rr.with.as_str()).into_owned()
    } else {
        return None;
    };
    let full = match query {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path,
    };
    PathAndQuery::try_from(full).ok()
}

fn blackhole(mut inflight: InFlight, snap: &Compiled, version: Version) -> Response<ProxyBody> {
    let f = inflight.fin();
    f.rec.upstream_cluster = Some(Arc::from(BLACKHOLE_CLUSTER));
    f.rec.route_name = Some(Arc::from("block_all"));
    f.metrics = Some(Arc::clone(&snap.blackhole_metrics));
    inflight.reply(
        502,
        ResponseFlags::NONE,
        "direct_response",
        Bytes::new(),
        version,
    )
}

/// Prepares headers, URI and version of a request going upstream.
pub(crate) fn prepare_upstream(
    req: &mut Request<ReqBody>,
    authority: Option<HeaderValue>,
    proto: UpstreamProto,
) {
    strip_hop_by_hop(req.headers_mut());
    let pq = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    match proto {
        UpstreamProto::H1 => {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(pq);
            if let Ok(u) = Uri::from_parts(parts) {
                *req.uri_mut() = u;
            }
            if let Some(v) = authority {
                req.headers_mut().insert(header::HOST, v);
            }
            *req.version_mut() = Version::HTTP_11;
        }
        UpstreamProto::H2 => {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = authority.and_then(|a| Authority::try_from(a.as_bytes()).ok());
            parts.path_and_query = Some(pq);
            if parts.authority.is_none() {
                parts.scheme = None;
            }
            if let Ok(u) = Uri::from_parts(parts) {
                *req.uri_mut() = u;
            }
            req.headers_mut().remove(header::HOST);
            *req.version_mut() = Version::HTTP_2;
        }
    }
}

/// How one try went.
enum TryOutcome {
    /// Response headers arrived.
    Response {
        resp: Response<Incoming>,
        h1: Option<H1Conn>,
        sent_at: Instant,
        active: ActiveGuard,
    },
    /// No connection: the request was not sent and comes back.
    ConnectFailed(PoolError, Request<ReqBody>),
    /// The connection failed before response headers; `back` is the request when hyper
    /// handed it back unsent (nothing was processed).
    Reset {
        error: String,
        back: Option<Request<ReqBody>>,
    },
}

/// One try on `ep`: checkout, send, response headers. A pooled connection can turn out closed
/// just as it is used; when hyper hands the request back unsent, it is sent again on another
/// connection to the same host (at most 3 times).
async fn try_once(
    cluster: &ClusterState,
    ep: &Arc<EndpointState>,
    proto: UpstreamProto,
    mut up_req: Request<ReqBody>,
    local: &std::sync::Mutex<Option<SocketAddr>>,
) -> TryOutcome {
    let mut upstream = match cluster.checkout(ep, proto).await {
        Ok(c) => c,
        Err(e) => return TryOutcome::ConnectFailed(e, up_req),
    };
    let active = ep.start_request();
    let mut unsent_retries = 0;
    loop {
        if let Ok(mut l) = local.lock() {
            *l = upstream.local();
        }
        let sent_at = Instant::now();
        let (result, h1) = match upstream {
            Conn::H1(mut c) => (c.tx.try_send_request(up_req).await, Some(c)),
            Conn::H2(mut tx, _) => (tx.try_send_request(up_req).await, None),
        };
        match result {
            Ok(resp) => {
                return TryOutcome::Response {
                    resp,
                    h1,
                    sent_at,
                    active,
                };
            }
            Err(mut e) => {
                let error = e.error().to_string();
                match e.take_message() {
                    Some(back) if unsent_retries < 3 => {
                        unsent_retries += 1;
                        up_req = back;
                        upstream = match cluster.checkout(ep, proto).await {
                            Ok(c) => c,
                            Err(e) => return TryOutcome::ConnectFailed(e, up_req),
                        };
                    }
                    back => return TryOutcome::Reset { error, back },
                }
            }
        }
    }
}

/// A request head kept for replays.
fn clone_head(req: &Request<ReqBody>) -> Request<()> {
    let mut p = Request::new(());
    *p.method_mut() = req.method().clone();
    *p.uri_mut() = req.uri().clone();
    *p.version_mut() = req.version();
    *p.headers_mut() = req.headers().clone();
    p
}

/// The route's retry policy when it has none to apply (inbound, faults).
static NO_RETRY: RetryPolicy = RetryPolicy::none();

#[allow(clippy::too_many_arguments)]
async fn forward(
    mut inflight: InFlight,
    conn: &ConnInfo,
    req: Request<Incoming>,
    received: Arc<AtomicU64>,
    cluster: Arc<ClusterState>,
    route: Option<&CompiledRoute>,
    dest: Option<&Dest>,
    authority: Option<HeaderValue>,
    version: Version,
) -> Response<ProxyBody> {
    {
        let f = inflight.fin();
        f.rec.upstream_cluster = Some(Arc::clone(&cluster.name));
        f.metrics = Some(metrics_for(&cluster, conn));
    }
    let Some(creq) = cluster.try_start_request() else {
        return inflight.error(PoolError::Overflow, version);
    };
    let pick_ctx = PickCtx {
        headers: Some(req.headers()),
        query: req.uri().query(),
        source_ip: conn.remote.ip(),
    };
    let Some(idx) = cluster.pick(&pick_ctx) else {
        return inflight.reply(
            503,
            ResponseFlags::UH,
            "no_healthy_upstream",
            Bytes::from_static(NO_HEALTHY_BODY.as_bytes()),
            version,
        );
    };
    let mut ep = Arc::clone(&cluster.endpoints[idx]);
    let proto = cluster.upstream_proto(req.version() == Version::HTTP_2);
    let policy = route.map_or(&NO_RETRY, |r| &r.retry);
    let deadline = route
        .and_then(|r| r.timeout)
        .map(|t| tokio::time::Instant::now() + t);
    // A peer sidecar that could not reach its app marks its 503 (`x-skein-not-delivered`):
    // that counts as a connect failure for a bodiless request (a `reset` one only for a safe
    // method: the app may have acted on it).
    let bodiless = http_body::Body::is_end_stream(req.body());
    let safe = matches!(
        *req.method(),
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    let mirror = route.and_then(|r| r.mirror.as_ref()).filter(|m| m.sample());
    // The body is copied as it streams (up to REPLAY_LIMIT) when a retry or a mirror may
    // need it again.
    let (parts, body) = req.into_parts();
    let (body, copy) = if policy.attempts > 0 || mirror.is_some() {
        let (b, c) = ReqBody::teed(body, received, crate::retry::REPLAY_LIMIT);
        (b, Some(c))
    } else {
        (ReqBody::new(body, received), None)
    };
    let mut up_req = Request::from_parts(parts, body);
    if let (Some(m), Some(c)) = (mirror, &copy) {
        m.spawn(
            &up_req,
            authority.clone(),
            c.clone(),
            version == Version::HTTP_2,
        );
    }
    prepare_upstream(&mut up_req, authority.clone(), proto);
    let head = (policy.attempts > 0).then(|| clone_head(&up_req));
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut attempt: u32 = 0;
    let mut _retry_slot: Option<RetryGuard> = None;
    let local = std::sync::Mutex::new(None);
    let timed_out = |inflight: InFlight, details: &'static str| {
        inflight.reply(
            504,
            ResponseFlags::UT,
            details,
            Bytes::from_static(TIMEOUT_BODY.as_bytes()),
            version,
        )
    };
    loop {
        attempt += 1;
        if route.is_some() {
            up_req
                .headers_mut()
                .insert(X_ATTEMPT_COUNT.clone(), HeaderValue::from(attempt));
        }
        inflight.fin().rec.upstream_host = Some(ep.addr);
        let per_try = policy
            .per_try_timeout
            .map(|d| tokio::time::Instant::now() + d);
        let try_deadline = match (per_try, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let fut = try_once(&cluster, &ep, proto, up_req, &local);
        let mut outcome = match try_deadline {
            Some(d) => tokio::time::timeout_at(d, fut).await.ok(),
            None => Some(fut.await),
        };
        inflight.fin().rec.upstream_local = local.lock().ok().and_then(|l| *l);
        if outcome.is_none() && deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return timed_out(inflight, "response_timeout");
        }
        if matches!(
            outcome,
            Some(TryOutcome::ConnectFailed(PoolError::Overflow, _))
        ) && let Some(TryOutcome::ConnectFailed(e, _)) = outcome
        {
            // Per-host maxConnections overflow: answered at once, as Envoy does.
            return inflight.error(e, version);
        }
        // Outlier detection counts each try (connect failures are counted in `checkout`).
        match &outcome {
            None => cluster.record_response(&ep, 504),
            Some(TryOutcome::Reset { back: None, .. }) => cluster.record_reset(&ep),
            Some(TryOutcome::Response { resp, .. }) => {
                cluster.record_response(&ep, resp.status().as_u16())
            }
            _ => {}
        }
        let failure = match &outcome {
            None => Failure::PerTryTimeout,
            Some(TryOutcome::ConnectFailed(..)) => Failure::ConnectFailure,
            Some(TryOutcome::Reset { back: Some(_), .. }) => Failure::RefusedStream,
            Some(TryOutcome::Reset { .. }) => Failure::Reset,
            Some(TryOutcome::Response { resp, .. }) => {
                let grpc = resp
                    .headers()
                    .get(&GRPC_STATUS)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u32>().ok());
                let undelivered = resp.status() == StatusCode::SERVICE_UNAVAILABLE
                    && bodiless
                    && match resp
                        .headers()
                        .get(&NOT_DELIVERED)
                        .map(HeaderValue::as_bytes)
                    {
                        Some(b"connect-failure") => true,
                        Some(b"reset") => safe,
                        _ => false,
                    };
                if undelivered && policy.retriable(Failure::ConnectFailure) {
                    Failure::ConnectFailure
                } else {
                    Failure::Status(resp.status().as_u16(), grpc)
                }
            }
        };
        let retriable = policy.retriable(failure);
        let retries_used = attempt - 1;
        let mut retry = retriable && retries_used < policy.attempts;
        if retriable && retries_used >= policy.attempts && policy.attempts > 0 {
            // Attempts ran out on a retriable failure: the last try's result goes back.
            inflight.fin().rec.flags |= ResponseFlags::URX;
        }
        // The request for the next try: the unsent one back, or the copied body replayed.
        let mut next_req = None;
        if retry {
            next_req = match outcome {
                Some(TryOutcome::ConnectFailed(_, ref mut r)) => {
                    Some(std::mem::replace(r, Request::new(ReqBody::empty())))
                }
                Some(TryOutcome::Reset {
                    back: Some(ref mut r),
                    ..
                }) => Some(std::mem::replace(r, Request::new(ReqBody::empty()))),
                _ => match (&head, copy.as_ref().and_then(BodyCopy::replay)) {
                    (Some(h), Some(body)) => {
                        let (parts, ()) = h.clone().into_parts();
                        Some(Request::from_parts(parts, body))
                    }
                    _ => None,
                },
            };
            retry = next_req.is_some();
        }
        if retry {
            match cluster
                .resilience
                .try_retry(cluster.active(), cluster.config.connection_pool.max_retries)
            {
                Some(slot) => _retry_slot = Some(slot),
                None => {
                    // Envoy: a retry refused by the budget / retry circuit breaker is UO.
                    tracing::debug!(cluster = %cluster.name, "retry budget exhausted");
                    inflight.fin().rec.flags |= ResponseFlags::UO;
                    retry = false;
                }
            }
        }
        if retry && let Some(req) = next_req {
            tracing::debug!(cluster = %cluster.name, host = %ep.addr, ?failure, attempt, "retrying");
            drop(outcome);
            let pause = crate::retry::backoff(attempt);
            match deadline {
                Some(d) if tokio::time::Instant::now() + pause >= d => {
                    tokio::time::sleep_until(d).await;
                    return timed_out(inflight, "response_timeout");
                }
                _ => tokio::time::sleep(pause).await,
            }
            tried.push(ep.addr);
            let mut next = None;
            // retryIgnorePreviousHosts: up to 5 picks to find a host not tried yet.
            for _ in 0..5 {
                next = cluster.pick(&PickCtx {
                    headers: None,
                    query: None,
                    source_ip: conn.remote.ip(),
                });
                if next.is_some_and(|i| !tried.contains(&cluster.endpoints[i].addr)) {
                    break;
                }
            }
            if let Some(i) = next {
                ep = Arc::clone(&cluster.endpoints[i]);
            }
            up_req = req;
            continue;
        }
        // No retry: this try's result is the answer.
        match outcome {
            None => return timed_out(inflight, "upstream_per_try_timeout"),
            Some(TryOutcome::ConnectFailed(e, _)) => return inflight.error(e, version),
            Some(TryOutcome::Reset { error, .. }) => {
                tracing::debug!(%error, cluster = %cluster.name, "upstream request failed");
                let mut resp = inflight.reply(
                    503,
                    ResponseFlags::UC,
                    "upstream_reset_before_response_started{connection_termination}",
                    Bytes::from_static(TERMINATION_BODY.as_bytes()),
                    version,
                );
                // The local app went away before answering (its process died): a client
                // sidecar may send a safe request to another pod.
                if cluster.name.starts_with("inbound|") {
                    resp.headers_mut()
                        .insert(NOT_DELIVERED.clone(), HeaderValue::from_static("reset"));
                }
                return resp;
            }
            Some(TryOutcome::Response {
                resp,
                h1,
                sent_at,
                active,
            }) => {
                return respond(
                    inflight, resp, h1, sent_at, active, creq, &cluster, &ep, route, dest, version,
                );
            }
        }
    }
}

/// Streams an upstream response downstream.
#[allow(clippy::too_many_arguments)]
fn respond(
    mut inflight: InFlight,
    resp: Response<Incoming>,
    h1: Option<H1Conn>,
    t0: Instant,
    active: ActiveGuard,
    creq: ClusterRequest,
    cluster: &Arc<ClusterState>,
    ep: &Arc<EndpointState>,
    route: Option<&CompiledRoute>,
    dest: Option<&Dest>,
    version: Version,
) -> Response<ProxyBody> {
    let service_ms = t0.elapsed().as_millis() as u64;
    let (mut rparts, rbody) = resp.into_parts();
    strip_hop_by_hop(&mut rparts.headers);
    // Only a skein proxy's own 503 may carry the marker, and only to the next proxy.
    rparts.headers.remove(&NOT_DELIVERED);
    if let Some(r) = route {
        r.ops.response.apply(&mut rparts.headers);
    }
    if let Some(d) = dest {
        d.ops.response.apply(&mut rparts.headers);
    }
    rparts
        .headers
        .insert(X_SERVICE_TIME.clone(), HeaderValue::from(service_ms));
    rparts.version = version;
    let mut fin = match inflight.fin.take() {
        Some(f) => f,
        None => unreachable!("finish taken twice"),
    };
    fin.rec.code = rparts.status.as_u16();
    fin.rec.upstream_service_time = Some(service_ms);
    fin.rec.details = Cow::Borrowed("via_upstream");
    fin.cluster_req = Some(creq);
    fin.pool = h1.map(|c| (Arc::clone(cluster), Arc::clone(ep), c));
    fin.active = Some(active);
    Response::from_parts(rparts, ProxyBody::Upstream(UpstreamBody::new(rbody, fin)))
}

async fn resolve(authority: &str) -> Option<SocketAddr> {
    let host = crate::route::strip_port(authority);
    let port = if host.len() < authority.len() {
        authority[host.len() + 1..].parse().ok()?
    } else {
        80
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    if let Some(ip) = hosts_file_lookup(bare) {
        return Some(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((bare, port)).await.ok()?.next()
}

/// The local runtime's cluster DNS: a hosts file named by `SKEIN_HOSTS`, read on each
/// passthrough lookup (passthrough is the slow path; the file is small).
fn hosts_file_lookup(name: &str) -> Option<IpAddr> {
    let path = std::env::var_os("SKEIN_HOSTS")?;
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .find_map(|l| {
            let mut words = l.split_whitespace();
            let ip = words.next()?.parse::<IpAddr>().ok()?;
            words.any(|w| w.eq_ignore_ascii_case(name)).then_some(ip)
        })
}

/// Forwards to the address the client asked for (PassthroughCluster). One connection per
/// request; passthrough is the escape hatch, not the fast path.
async fn passthrough(
    mut inflight: InFlight,
    snap: &Compiled,
    conn: &ConnInfo,
    req: Request<Incoming>,
    received: Arc<AtomicU64>,
    authority: &str,
    version: Version,
) -> Response<ProxyBody> {
    {
        let f = inflight.fin();
        f.rec.upstream_cluster = Some(Arc::from(PASSTHROUGH_CLUSTER));
        f.rec.route_name = Some(Arc::from("allow_any"));
        f.metrics = Some(Arc::clone(&snap.passthrough_metrics));
    }
    let Some(addr) = resolve(authority).await else {
        inflight.fin().rec.transport_failure = Some(Cow::Borrowed("dns_resolution_failure"));
        return inflight.reply(
            503,
            ResponseFlags::UF,
            "upstream_reset_before_response_started{connection_failure}",
            Bytes::from_static(CONNECT_FAILURE_BODY.as_bytes()),
            version,
        );
    };
    if addr == conn.local {
        // The client asked for the proxy itself: forwarding would loop.
        return inflight.reply(
            404,
            ResponseFlags::NR,
            "route_not_found",
            Bytes::new(),
            version,
        );
    }
    inflight.fin().rec.upstream_host = Some(addr);
    let timeout = std::time::Duration::from_secs(10);
    let stream = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => return inflight.error(PoolError::Connect { addr, source }, version),
        Err(_) => return inflight.error(PoolError::ConnectTimeout { addr, timeout }, version),
    };
    let _ = stream.set_nodelay(true);
    inflight.fin().rec.upstream_local = stream.local_addr().ok();
    let (mut tx, c) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(x) => x,
        Err(source) => return inflight.error(PoolError::Handshake { addr, source }, version),
    };
    tokio::spawn(async move {
        let _ = c.await;
    });
    let (parts, body) = req.into_parts();
    let mut up_req = Request::from_parts(parts, ReqBody::new(body, received));
    prepare_upstream(
        &mut up_req,
        HeaderValue::from_str(authority).ok(),
        UpstreamProto::H1,
    );
    let t0 = Instant::now();
    match tx.send_request(up_req).await {
        Ok(resp) => {
            let service_ms = t0.elapsed().as_millis() as u64;
            let (mut rparts, rbody) = resp.into_parts();
            strip_hop_by_hop(&mut rparts.headers);
            rparts.version = version;
            let mut fin = match inflight.fin.take() {
                Some(f) => f,
                None => unreachable!("finish taken twice"),
            };
            fin.rec.code = rparts.status.as_u16();
            fin.rec.upstream_service_time = Some(service_ms);
            fin.rec.details = Cow::Borrowed("via_upstream");
            Response::from_parts(rparts, ProxyBody::Upstream(UpstreamBody::new(rbody, fin)))
        }
        Err(_) => inflight.reply(
            503,
            ResponseFlags::UC,
            "upstream_reset_before_response_started{connection_termination}",
            Bytes::from_static(TERMINATION_BODY.as_bytes()),
            version,
        ),
    }
}

/// Serves HTTP/1.1 and HTTP/2 (prior knowledge) on one connection until it closes or the
/// proxy drains (then it finishes in-flight requests and closes).
pub async fn serve_connection<I>(
    io: I,
    ctx: Arc<HttpCtx>,
    info: Arc<ConnInfo>,
    mut drain: DrainSignal,
    token: ConnToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc =
        hyper::service::service_fn(move |req| handle(Arc::clone(&ctx), Arc::clone(&info), req));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "downstream connection ended with an error");
            }
        }
        _ = drain.signaled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
    drop(token);
}
